"""The deployment controller: desired state -> leases -> engines -> health -> endpoints."""

from cambist.deploy.controller import DeployController
from cambist.deploy.health import HealthProbe
from cambist.deploy.leasing import LeaseDesk, LeaseSync, RentRequest
from cambist.deploy.market_feed import MarketFeed
from cambist.deploy.records import Records

__all__ = ["DeployController", "HealthProbe", "LeaseDesk", "LeaseSync", "MarketFeed",
           "Records", "RentRequest"]
