"""The model API: an OpenAI-compatible gateway that authenticates, prices,
reserves credit, routes each request to the cheapest healthy endpoint,
proxies (streaming or not), fails over before the first byte, and meters."""

from cambist.gateway.app import create_gateway_app, gateway_routes
from cambist.gateway.deps import EventSink, GatewayDeps, GatewaySettings
from cambist.gateway.policy import RoutingPolicy
from cambist.gateway.registry import RoutingRefresh
from cambist.gateway.routing import EndpointRoute, EndpointStats, RoutingTable

__all__ = [
    "EndpointRoute",
    "EndpointStats",
    "EventSink",
    "GatewayDeps",
    "GatewaySettings",
    "RoutingPolicy",
    "RoutingRefresh",
    "RoutingTable",
    "create_gateway_app",
    "gateway_routes",
]
