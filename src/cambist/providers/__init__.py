"""cambist.providers"""
