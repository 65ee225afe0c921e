"""The deployment controller: desired state -> leases -> engines -> health -> endpoints."""

from cambist.deploy.autoscale import Autoscaling, ScalePolicy
from cambist.deploy.controller import DeployController
from cambist.deploy.health import HealthProbe
from cambist.deploy.leasing import LeaseDesk, LeaseSync, RentRequest
from cambist.deploy.load import EngineLoad
from cambist.deploy.market_feed import MarketFeed
from cambist.deploy.rebalance import MovePolicy
from cambist.deploy.records import Records
from cambist.deploy.spec import DeploySpec

__all__ = ["Autoscaling", "DeployController", "DeploySpec", "EngineLoad", "HealthProbe",
           "LeaseDesk", "LeaseSync", "MarketFeed", "MovePolicy", "Records", "RentRequest",
           "ScalePolicy"]
