"""The API's profile routes, mounted into create_app's app by `mount`.

A profile is a named set of settings. Instances keep a link to theirs (in order): an instance's
effective config is its profiles' settings, then its own on top, computed again whenever it is
read, started or changed. So a change to a profile reaches every instance using it:

- GET    /1.0/profiles, GET /1.0/profiles/{name}: with `used_by`, the instances using it;
- POST   /1.0/profiles {"name", "config", "description"}: a new profile;
- PUT    /1.0/profiles/{name} {"config", "description"}: its whole config (and description);
- PATCH  /1.0/profiles/{name} {"config": {key: value or null}, "description"}: some keys;
- POST   /1.0/profiles/{name} {"name"}: rename (as Incus does); refused while instances use it;
- DELETE /1.0/profiles/{name}: refused while instances use it (the message names them).

A change is checked first for EVERY instance using the profile (its settings with the new
profile's must validate, its NICs' networks must exist): one problem and nothing changes. Then
running (and frozen) instances take the changed live settings at once, as `config set` does, and
the others at their next start: the answer says which instance took what (`live`) and what waits
for a restart (`next_start`). A failure half-way undoes the live changes already made.
There are no built-in profiles: every profile is the administrator's, and may be deleted when unused.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from jaula.daemon import schemas as s
from jaula.daemon.models import InstanceRow, ProfileRow, validate_name
from jaula.errors import BadState, ConfigError
from jaula.instances import settings

log = logging.getLogger("jaula.api")


class ProfilePut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: dict[str, str] = Field(default={}, description="the profile's whole config: keys left out are removed")
    description: str | None = Field(default=None, description="a new description; null keeps it")


class ProfilePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: dict[str, str | None] = Field(default={}, description="keys to set; null or \"\" removes a key")
    description: str | None = Field(default=None, description="a new description; null keeps it")


class ProfileRename(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the new name: a DNS label, not taken")


class ProfileChange(BaseModel):
    profile: s.Profile
    live: dict[str, list[str]] = Field(
        description="running (or frozen) instance -> the changed settings it took at once")
    next_start: dict[str, list[str]] = Field(
        description="running (or frozen) instance -> the changed settings that need a restart: "
                    "stored, applied at its next start")


def profile_out(p: ProfileRow, used_by: list[str]) -> s.Profile:
    return s.Profile(name=p.name, description=p.description, config=dict(p.config), used_by=used_by)


class _Plan:
    """One instance's part of a profile change: what it becomes, and what a running one takes now."""

    def __init__(self, row: InstanceRow, new: dict[str, Any], old: dict[str, Any] | None) -> None:
        self.row, self.new, self.old = row, new, old
        self.live: list[str] = []
        self.later: list[str] = []
        if row.status in ("running", "frozen"):
            if old is None:  # stored before a rule changed: nothing known to be in force, all at restart
                self.later = sorted(new)
            else:
                changed = settings.changed_keys(old, new)
                self.live = [k for k in changed if settings.is_live(k)]
                self.later = [k for k in changed if not settings.is_live(k)]

    def target(self) -> dict[str, Any]:
        """What the running instance takes now: its config in force with the live keys changed."""
        assert self.old is not None
        out = dict(self.old)
        for k in self.live:
            if k in self.new:
                out[k] = self.new[k]
            else:
                out.pop(k, None)
        return out


class ProfileService:
    def __init__(self, svc: Any) -> None:
        self.svc, self.db, self.backend = svc, svc.db, svc.backend

    def out(self, row: ProfileRow) -> s.Profile:
        return profile_out(row, self.db.profile_users(row.name))

    def create(self, name: str, config: dict[str, str], description: str) -> ProfileRow:
        from jaula.daemon.api import _canonical, _validated

        validate_name(name, "Profile")
        canon = _canonical(_validated(config, f"Profile {name!r}"))
        row = self.db.create_profile(ProfileRow(name=name, description=description, config=canon))
        self.svc.events.lifecycle("profile-created", {"name": name})
        return row

    def change(self, name: str, config: dict[str, str], description: str | None) -> ProfileChange:
        """Make `config` the profile's whole config: checked for every user first, then applied."""
        from jaula.daemon.api import _canonical, _validated

        self.db.get_profile(name)  # 404 before anything else
        new_config = _canonical(_validated(config, f"Profile {name!r}"))
        plans, problems = [], []
        for user in self.db.profile_users(name):
            row = self.db.get_instance(user)
            merged: dict[str, Any] = {}
            for p in row.profiles:
                merged.update(new_config if p == name else self.db.get_profile(p).config)
            merged.update(row.config)
            what = f"Instance {user!r} with profile {name!r} changed"
            try:
                new = _validated(merged, what)
                if self.svc.networks is not None:
                    self.svc.networks.check_networks(new)
            except ConfigError as exc:
                problems += [p if p.startswith(what) else f"{what}: {p}" for p in exc.problems]
                continue
            try:
                old = self.svc.expanded(row.profiles, row.config)
            except ConfigError:
                old = None
            plans.append(_Plan(row, new, old))
        if problems:
            raise ConfigError(problems)
        with ExitStack() as undo:
            for plan in plans:
                if plan.live:
                    inst = self.svc.instance(plan.row)
                    target = plan.target()
                    self.backend.update(inst, target)
                    undo.callback(self._revert, plan.row, target, plan.old)
            with self.db.transaction() as db:
                db.update_profile(name, description=description, config=new_config)
                for plan in plans:
                    db.update_instance(plan.row.name, autostart=bool(plan.new.get("boot.autostart")))
                    if self.svc.networks is not None:  # addresses follow the NICs, in the same transaction
                        self.svc.networks.allocate(plan.row.name)
            undo.pop_all()
        self.svc.events.lifecycle("profile-updated", {"name": name})
        for plan in plans:
            if plan.live or plan.later:
                self.svc.events.lifecycle("instance-updated", {"name": plan.row.name})
        return ProfileChange(profile=self.out(self.db.get_profile(name)),
                             live={p.row.name: p.live for p in plans if p.live},
                             next_start={p.row.name: p.later for p in plans if p.later})

    def _revert(self, row: InstanceRow, applied: dict[str, Any], old: dict[str, Any]) -> None:
        inst = self.svc.instance(row)
        inst.config = applied
        try:
            self.backend.update(inst, old)
        except Exception as exc:  # noqa: BLE001 (the first failure is the one re-raised)
            log.error("profile change undone: instance %r could not take its settings back: %s", row.name, exc)

    def patch(self, name: str, changes: dict[str, str | None], description: str | None) -> ProfileChange:
        config: dict[str, str] = dict(self.db.get_profile(name).config)
        for key, value in changes.items():
            if value is None or value == "":
                config.pop(key, None)
            else:
                config[key] = value
        return self.change(name, config, description)

    def rename(self, name: str, new_name: str) -> ProfileRow:
        validate_name(new_name, "Profile")
        with self.db.transaction() as db:
            self._unused(name, "rename")
            db.rename_profile(name, new_name)
        self.svc.events.lifecycle("profile-renamed", {"name": new_name, "old_name": name})
        return self.db.get_profile(new_name)

    def delete(self, name: str) -> None:
        with self.db.transaction() as db:
            self._unused(name, "delete")
            db.delete_profile(name)
        self.svc.events.lifecycle("profile-deleted", {"name": name})

    def _unused(self, name: str, verb: str) -> None:
        self.db.get_profile(name)
        if users := self.db.profile_users(name):
            raise BadState(f"Cannot {verb} profile {name!r}: it is used by {', '.join(users)} "
                           f"(`jaula profile remove INSTANCE {name}` first)")


def mount(app: FastAPI, svc: Any) -> ProfileService:
    from jaula.daemon.api import _sync

    ps = ProfileService(svc)
    db = svc.db

    @app.get("/1.0/profiles", response_model=s.Sync[list[s.Profile]], tags=["profiles"])
    def list_profiles() -> dict:
        return _sync([ps.out(p) for p in db.list_profiles()])

    @app.post("/1.0/profiles", response_model=s.Sync[s.Profile], status_code=201, tags=["profiles"])
    def create_profile(body: s.ProfileCreate) -> dict:
        return _sync(ps.out(ps.create(body.name, body.config, body.description)), status_code=201)

    @app.get("/1.0/profiles/{name}", response_model=s.Sync[s.Profile], tags=["profiles"])
    def get_profile(name: str) -> dict:
        return _sync(ps.out(db.get_profile(name)))

    @app.put("/1.0/profiles/{name}", response_model=s.Sync[ProfileChange], tags=["profiles"])
    def put_profile(name: str, body: ProfilePut) -> dict:
        """Replace the profile's config (checked for every instance using it first)."""
        return _sync(ps.change(name, body.config, body.description))

    @app.patch("/1.0/profiles/{name}", response_model=s.Sync[ProfileChange], tags=["profiles"])
    def patch_profile(name: str, body: ProfilePatch) -> dict:
        """Set or remove some keys (checked for every instance using it first)."""
        return _sync(ps.patch(name, body.config, body.description))

    @app.post("/1.0/profiles/{name}", response_model=s.Sync[s.Profile], tags=["profiles"])
    def rename_profile(name: str, body: ProfileRename) -> dict:
        """Rename the profile; refused (409) while instances use it."""
        return _sync(ps.out(ps.rename(name, body.name)))

    @app.delete("/1.0/profiles/{name}", response_model=s.Sync[dict[str, Any]], tags=["profiles"])
    def delete_profile(name: str) -> dict:
        """Delete the profile; refused (409) while instances use it."""
        ps.delete(name)
        return _sync({})

    return ps

