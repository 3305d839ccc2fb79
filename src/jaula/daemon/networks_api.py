"""The API's network routes, mounted into create_app's app by `mount` (the actions: networks.py).

- GET/POST /1.0/networks; GET/PATCH/DELETE /1.0/networks/{name} (a delete is refused, 409,
  while an instance uses the network; its subnets and bridge cannot change then either)
- GET/POST /1.0/networks/{name}/forwards; DELETE /1.0/networks/{name}/forwards/{proto}/{host_port}
  (?host_address=): host port to an instance's port, on the instance's IPv4 address there
- GET /1.0/network-addresses: every allocated address (what `jaula list` shows)
- GET/POST /1.0/instances/{name}/nics, DELETE /1.0/instances/{name}/nics/{nic}: an instance's
  NICs; a running instance's are plugged or unplugged at once
All are synchronous; errors in the API's envelope.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field

from jaula.daemon import schemas as s
from jaula.daemon.network_tables import ForwardRow, NetworkRow
from jaula.daemon.networks import NetworkService
from jaula.errors import Exists
from jaula.network import config as netconfig


class Network(BaseModel):
    name: str
    description: str
    created: str
    config: dict[str, str] = Field(description="its settings, with the subnets and bridge chosen at create")
    used_by: list[str] = Field(description="instances with a NIC on it: they keep it from being deleted")


class NetworkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="a DNS label: 1 to 63 of a-z, 0-9 and '-'")
    description: str = ""
    config: dict[str, str] = Field(default={}, description="keys: " + ", ".join(netconfig.NETWORK_KEYS))


class NetworkPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = None
    config: dict[str, str | None] = Field(default={}, description="keys to set; null or \"\" unsets one")


class Forward(BaseModel):
    network: str
    instance: str
    nic: str
    proto: Literal["tcp", "udp"]
    host_address: str = Field(description="\"\": every host address")
    host_port: int
    port: int


class ForwardCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instance: str
    proto: Literal["tcp", "udp"] = "tcp"
    host_port: int = Field(ge=1, le=65535)
    port: int = Field(ge=1, le=65535, description="the instance's port")
    host_address: str = Field(default="", description="one host address; \"\": every one")
    nic: str | None = Field(default=None, description="the instance's NIC on the network (default: its first)")


class Address(BaseModel):
    network: str
    instance: str
    nic: str
    family: Literal[4, 6]
    address: str = Field(description="without prefix")


class Nic(BaseModel):
    name: str
    type: str
    network: str | None
    parent: str | None
    mac: str
    host_name: str | None = Field(description="the host-side interface (veth) name")
    ipv4: str | None
    ipv6: str | None
    config: dict[str, str] = Field(description="its nic.<name>.* settings, without the prefix")


class NicCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the interface name inside, e.g. eth1")
    config: dict[str, str] = Field(default={}, description="nic.<name>.* settings without the prefix: "
                                   + ", ".join(netconfig.NIC_FIELDS) + " (type bridged on network default "
                                   "when unset)")


_HOST_ERROR: dict[int | str, dict[str, Any]] = {
    500: {"model": s.Error, "description": "the host side (bridge, links, firewall) failed: nothing was kept"}}


def mount(app: FastAPI, svc: Any) -> NetworkService:
    """Add the routes; the service (the instance hooks of api._Service use it)."""
    net = NetworkService(svc)
    db = svc.db
    app.state.networks = net

    def out(row: NetworkRow) -> Network:
        return Network(name=row.name, description=row.description, created=row.created, config=dict(row.config),
                       used_by=net.users(row.name))

    def fwd_out(f: ForwardRow) -> Forward:
        return Forward(network=f.network, instance=f.instance, nic=f.nic, proto=f.proto,  # type: ignore[arg-type]
                       host_address=f.host_address, host_port=f.host_port, port=f.port)

    @app.get("/1.0/networks", response_model=s.Sync[list[Network]], tags=["networks"])
    def list_networks() -> dict:
        return _sync([out(r) for r in db.list_networks()])

    @app.post("/1.0/networks", response_model=s.Sync[Network], status_code=201, tags=["networks"], responses=_HOST_ERROR)
    def create_network(body: NetworkCreate) -> dict:
        return _sync(out(net.create(body.name, body.config, body.description)), 201)

    @app.get("/1.0/networks/{name}", response_model=s.Sync[Network], tags=["networks"])
    def get_network(name: str) -> dict:
        return _sync(out(db.get_network(name)))

    @app.patch("/1.0/networks/{name}", response_model=s.Sync[Network], tags=["networks"], responses=_HOST_ERROR)
    def patch_network(name: str, body: NetworkPatch) -> dict:
        return _sync(out(net.update(name, body.config, body.description)))

    @app.delete("/1.0/networks/{name}", response_model=s.Sync[dict], tags=["networks"], responses=_HOST_ERROR)
    def delete_network(name: str) -> dict:
        net.delete(name)
        return _sync({})

    @app.get("/1.0/networks/{name}/forwards", response_model=s.Sync[list[Forward]], tags=["networks"])
    def list_forwards(name: str) -> dict:
        db.get_network(name)
        return _sync([fwd_out(f) for f in db.forwards(network=name)])

    @app.post("/1.0/networks/{name}/forwards", response_model=s.Sync[Forward], status_code=201, tags=["networks"], responses=_HOST_ERROR)
    def add_forward(name: str, body: ForwardCreate) -> dict:
        row = net.add_forward(name, body.instance, body.proto, body.host_port, body.port, body.host_address, body.nic)
        return _sync(fwd_out(row), 201)

    @app.delete("/1.0/networks/{name}/forwards/{proto}/{host_port}", response_model=s.Sync[dict], tags=["networks"], responses=_HOST_ERROR)
    def remove_forward(name: str, proto: Literal["tcp", "udp"], host_port: int,
                       host_address: str = Query("", description="the forward's host address; \"\": every one")) -> dict:
        net.remove_forward(name, proto, host_port, host_address)
        return _sync({})

    @app.get("/1.0/network-addresses", response_model=s.Sync[list[Address]], tags=["networks"])
    def list_addresses() -> dict:
        return _sync([Address(**a.as_dict()) for a in db.addresses()])

    @app.get("/1.0/instances/{name}/nics", response_model=s.Sync[list[Nic]], tags=["instances"])
    def list_nics(name: str) -> dict:
        return _sync([Nic(**n) for n in net.nics_of(name)])

    @app.post("/1.0/instances/{name}/nics", response_model=s.Sync[list[Nic]], status_code=201, tags=["instances"], responses=_HOST_ERROR)
    def add_nic(name: str, body: NicCreate) -> dict:
        if any(n["name"] == body.name and n["type"] != "none" for n in net.nics_of(name)):
            raise Exists(f"Instance {name!r} already has NIC {body.name!r}: remove it first, "
                         f"or change it with jaula config set {name} nic.{body.name}.KEY=VALUE")
        net.set_nic(name, body.name, dict(body.config) or {"type": "bridged"})
        return _sync([Nic(**n) for n in net.nics_of(name)], 201)

    @app.delete("/1.0/instances/{name}/nics/{nic}", response_model=s.Sync[list[Nic]], tags=["instances"], responses=_HOST_ERROR)
    def remove_nic(name: str, nic: str) -> dict:
        net.set_nic(name, nic, None)
        return _sync([Nic(**n) for n in net.nics_of(name)])

    return net


def _sync(metadata: Any, status_code: int = 200) -> dict:
    return {"type": "sync", "status": "Success" if status_code < 300 else "Created",
            "status_code": status_code, "metadata": metadata}
