"""cambist.gateway"""
