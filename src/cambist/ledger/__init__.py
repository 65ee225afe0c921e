"""cambist.ledger"""
