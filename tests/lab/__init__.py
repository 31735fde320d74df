"""NAT lab: network namespaces with nftables NAT routers (netlab.py) and its self-test."""
