"""Topics bridged between hosts through NATS JetStream (``mycelium bridge``).

The bridge is its own process and an ordinary Mycelium client: a consumer of the topics
it exports, a producer of the topics it imports; the coordinator never sees NATS. See
docs/distribution.md for the deployment, the guarantees and the failure table.
"""

from mycelium.bridge.runner import Bridge, run_bridge

__all__ = ["Bridge", "run_bridge"]
