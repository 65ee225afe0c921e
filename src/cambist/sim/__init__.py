"""cambist.sim"""
