"""cambist.market"""
