"""Pure types and arithmetic: SKUs, offers, leases, deployments, endpoints, usage, money, time."""
