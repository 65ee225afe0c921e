"""cambist.app"""
