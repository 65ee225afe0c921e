"""The simulator: the real components on a virtual clock, faster than real time.

``cambist sim SCENARIO`` runs :func:`cambist.sim.run.simulate`: demand
(:mod:`.demand`) from a versioned scenario file (:mod:`.scenario`), simulated
suppliers stepped on the clock (:mod:`.market`), Cambist's capacity policy
calling the placement solver (:mod:`.policy`, :mod:`.fleet`), traffic through
the gateway's routing table per cohort or per request (:mod:`.traffic`,
:mod:`.driver`), money through the ledger's journal (:mod:`.books`); then the
dedicated and single-supplier baselines (:mod:`.baselines`) and the hindsight
oracle (:mod:`.oracle`) on the same realized demand and prices, and the report
(:mod:`.figures`, :mod:`.report`). Nothing outside ``cli`` imports this package.
"""
