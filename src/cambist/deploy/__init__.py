"""cambist.deploy"""
