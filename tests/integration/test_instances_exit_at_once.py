"""ContainerDriver.start of an app whose command ends at once (/bin/true): the init may be gone
before start reads the runtime's state, which then says stopped with no pid. start still gives
the init's pid, so jaulad watches it (its pidfd reports the exit at once) instead of recording
an instance "running" with nothing to watch. Racy by nature: the pid-0 case showed in 1 to 19
starts of 40 through jaulad on a busy host; here 20 starts, each must give a pid."""

from __future__ import annotations

from tests.integration.test_instances_container import Host, host, store  # noqa: F401 (fixtures)
from tests.support.containers import wait_until


def test_an_app_that_exits_at_once_still_gives_its_pid(host: Host) -> None:  # noqa: F811
    inst = host.new(mode="app", command=["/bin/true"])
    for _ in range(20):
        st = host.start(inst)
        assert st.pid > 0, st
        wait_until("/bin/true to end", lambda: host.driver.state(inst).status == "stopped", timeout=15)
    host.driver.delete(inst)  # frees the ended run's cgroup, state and mount with the volume
    host.instances.remove(inst)
    assert host.leaks() == []
