"""cambist.web"""
