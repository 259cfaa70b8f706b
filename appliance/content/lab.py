"""The content library's part of the lab: each appliance's archive port and demo content.

Every simulated appliance gets a library on `<slot>/content` with a small bilingual ZIM archive
and an OER pack the project builds itself (`demo.py`, CC0), so a new user sees a working library
at once. The archive origin is served by the portal process; this part only adds the port.
"""

from __future__ import annotations

from appliance.lab.parts import LabContext, LabPart, Slot


class ContentPart(LabPart):
    name = "content"

    def port(self, ctx: LabContext, slot: Slot) -> int:
        return ctx.base_port + 100 + slot.n

    def ports(self, ctx: LabContext) -> list[int]:
        return [ctx.base_port + 100 + n for n in range(1, ctx.count + 1)]

    def configure(self, ctx: LabContext) -> None:
        for slot in ctx.slots:
            slot.sections["content"] = {"root": str(slot.directory / "content"),
                                        "archive_port": self.port(ctx, slot)}

    def prepare(self, ctx: LabContext) -> None:
        from appliance.config import load
        from appliance.content import demo, library, schema
        from appliance.content.store import ContentStore
        from appliance.store import migrate, open_db

        for slot in ctx.slots:
            cfg = load(slot.config_path)
            db = open_db(cfg.database_path)
            try:
                migrate(db, schema.COMPONENT, schema.MIGRATIONS)
                store = ContentStore(cfg.content.root, db)
                if library.get(db, "classroom_demo") is None:
                    build = slot.directory / "demo-build"
                    build.mkdir(exist_ok=True)
                    library.add_zim(store, demo.build_demo_zim(build / "classroom_demo.zim"),
                                    subject="science")
                    library.add_pack(store, demo.build_demo_pack(build / "fractions"), name="fractions_ru",
                                     language="ru", subject="maths", title="Дроби: первые шаги")
            finally:
                db.conn.close()

    def banner(self, ctx: LabContext) -> list[str]:
        return [f"  archives  http://{ctx.host}:{self.port(ctx, slot)}/   "
                f"({slot.id}, the library's own origin)"
                for slot in ctx.slots]
