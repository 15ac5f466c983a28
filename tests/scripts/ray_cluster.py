"""A Ray cluster of several nodes on this machine, all on loopback, driven over stdin
(used by tests/test_sweep_cluster.py).

    python ray_cluster.py WORKERS

Starts a head node with no CPUs (so that no run lands on it) and WORKERS worker nodes
of one CPU each (Ray's own ``ray.cluster_utils.Cluster``), then prints one JSON line:
the cluster's address and each worker's node id. Commands on stdin, one per line:

    remove I    kill worker I's processes at once (SIGKILL, as a lost machine), then 'removed I'
    quit        shut the cluster down and exit
"""
import json
import os
import sys

# Set before Ray is imported: every node's address from loopback (Ray would otherwise
# take this machine's network address), and no usage statistics sent.
os.environ.setdefault('RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER', '0')
os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')

from ray.cluster_utils import Cluster

LOOPBACK = '127.0.0.1'
NODE = dict(node_ip_address=LOOPBACK, include_dashboard=False, object_store_memory=80 * 1024 ** 2)
# A lost node is noticed within about 3 s (Ray's defaults: about 30 s).
FAST_FAILURE_DETECTION = {'health_check_period_ms': 500, 'health_check_failure_threshold': 4,
                          'health_check_timeout_ms': 500}


def main(workers):
    cluster = Cluster(initialize_head=True, head_node_args=dict(
        NODE, num_cpus=0, _system_config=FAST_FAILURE_DETECTION))
    nodes = [cluster.add_node(**NODE, num_cpus=1) for _ in range(workers)]
    cluster.wait_for_nodes()
    print(json.dumps(dict(address=cluster.address, workers=[n.node_id for n in nodes])), flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        if command == 'remove':
            cluster.remove_node(nodes[int(args[0])], allow_graceful=False)
            print(f'removed {args[0]}', flush=True)
        elif command == 'quit':
            break
    cluster.shutdown()


if __name__ == '__main__':
    main(int(sys.argv[1]))
