"""cambist.cli"""
