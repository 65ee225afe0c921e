"""cambist.api"""
