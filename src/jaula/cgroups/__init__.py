"""cgroup drivers (v1 and v2) behind one interface, with beancounter-style accounting."""
