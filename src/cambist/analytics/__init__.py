"""cambist.analytics"""
