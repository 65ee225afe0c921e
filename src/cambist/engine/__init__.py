"""cambist.engine"""
