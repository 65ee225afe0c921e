"""cambist.placement"""
