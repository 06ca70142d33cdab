"""Convert between ComfyUI's API-format prompts and UI-format (LiteGraph) workflows.

``node_defs`` maps a node type to its ``INPUT_TYPES()`` and ``RETURN_TYPES``/``RETURN_NAMES``, read
from the real host's NODE_CLASS_MAPPINGS. Used to build the shipped UI workflows from the API ones
(``python -m tests.host.workflow_tools``) and, in tests, to prove both forms stay the same graph.
"""

from __future__ import annotations

import json
from pathlib import Path

FRONTEND_ONLY = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def node_def(cls) -> dict:
    it = cls.INPUT_TYPES()
    inputs = []
    for section in ("required", "optional"):
        for name, spec in (it.get(section) or {}).items():
            typ = spec[0]
            widget = isinstance(typ, list) or typ in WIDGET_TYPES
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            default = opts.get("default", typ[0] if isinstance(typ, list) and typ else None)
            inputs.append({"name": name, "type": "COMBO" if isinstance(typ, list) else typ, "widget": widget,
                           "seed": name in ("seed", "noise_seed") and typ == "INT", "default": default})
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    return {"inputs": inputs, "outputs": list(zip(names, cls.RETURN_TYPES))}


def api_to_ui(prompt: dict, defs: dict, notes: list[str] = (), titles: dict | None = None) -> dict:
    ids = {nid: i + 1 for i, nid in enumerate(prompt)}
    links, ui_nodes = [], []
    out_links: dict = {}
    for nid, node in prompt.items():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                src, slot = value
                typ = defs[prompt[src]["class_type"]]["outputs"][slot][1]
                link_id = len(links) + 1
                links.append([link_id, ids[src], slot, ids[nid], name, typ])
                out_links.setdefault((src, slot), []).append(link_id)
    for order, (nid, node) in enumerate(prompt.items()):
        d = defs[node["class_type"]]
        inputs, widgets = [], []
        for inp in d["inputs"]:
            value = node["inputs"].get(inp["name"])
            linked = isinstance(value, list)
            link_id = next((l[0] for l in links if l[3] == ids[nid] and l[4] == inp["name"]), None)
            if not inp["widget"] or linked:
                entry = {"name": inp["name"], "type": inp["type"], "link": link_id}
                if inp["widget"]:
                    entry["widget"] = {"name": inp["name"]}
                inputs.append(entry)
            if inp["widget"]:
                widgets.append(inp["default"] if linked else value)
                if inp["seed"]:
                    widgets.append("fixed")
        outputs = [{"name": n, "type": t, "links": out_links.get((nid, i), []), "slot_index": i}
                   for i, (n, t) in enumerate(d["outputs"])]
        ui_nodes.append({"id": ids[nid], "type": node["class_type"], "pos": [60 + 360 * (order % 4), 80 + 420 * (order // 4)],
                         "size": [320, 60 + 26 * (len(inputs) + len(widgets))], "flags": {}, "order": order,
                         "mode": 0, "inputs": inputs, "outputs": outputs,
                         "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets,
                         **({"title": titles[nid]} if titles and nid in titles else {})})
    next_id = len(ui_nodes) + 1
    for k, text in enumerate(notes):
        ui_nodes.append({"id": next_id + k, "type": "Note", "pos": [60 + 420 * k, -260], "size": [400, 220],
                         "flags": {}, "order": len(ui_nodes), "mode": 0, "inputs": [], "outputs": [],
                         "properties": {"text": ""}, "widgets_values": [text],
                         "color": "#432", "bgcolor": "#653"})
    # LiteGraph stores the target slot index, not the input name
    for link in links:
        target = next(n for n in ui_nodes if n["id"] == link[3])
        link[4] = next(i for i, e in enumerate(target["inputs"]) if e["name"] == link[4])
    return {"last_node_id": max(n["id"] for n in ui_nodes), "last_link_id": len(links), "nodes": ui_nodes,
            "links": links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
            "version": 0.4}


def ui_to_api(ui: dict, defs: dict) -> dict:
    """The API prompt the frontend would queue for this UI workflow (frontend-only nodes dropped)."""
    links = {l[0]: l for l in ui["links"]}
    prompt = {}
    for node in ui["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) in (2, 4):
            continue
        d = defs[node["type"]]
        values = iter(node.get("widgets_values", []))
        by_name = {e["name"]: e for e in node.get("inputs", [])}
        inputs = {}
        for inp in d["inputs"]:
            if inp["widget"]:
                # a widget this workflow predates (a newer host added it): the frontend uses its default
                value = next(values, inp["default"])
                if inp["seed"]:
                    next(values, None)  # control_after_generate
                entry = by_name.get(inp["name"])
                if entry is not None and entry.get("link") is not None:
                    link = links[entry["link"]]
                    inputs[inp["name"]] = [str(link[1]), link[2]]
                else:
                    inputs[inp["name"]] = value
            elif inp["name"] in by_name and by_name[inp["name"]].get("link") is not None:
                link = links[by_name[inp["name"]]["link"]]
                inputs[inp["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def renumber(prompt: dict) -> dict:
    """API prompt with node ids 1..N in insertion order (the UI form numbers nodes that way)."""
    ids = {nid: str(i + 1) for i, nid in enumerate(prompt)}
    out = {}
    for nid, node in prompt.items():
        inputs = {k: ([ids[v[0]], v[1]] if isinstance(v, list) else v) for k, v in node["inputs"].items()}
        out[ids[nid]] = {"class_type": node["class_type"], "inputs": inputs}
    return out


WORKFLOW_DIR = Path(__file__).resolve().parents[2] / "workflows"


def build_all(defs: dict) -> list[Path]:
    """Write workflows/<name>.json (UI form) for every workflows/api/<name>.json (+ notes from _meta)."""
    written = []
    for api_path in sorted((WORKFLOW_DIR / "api").glob("*.json")):
        prompt = json.loads(api_path.read_text())
        notes = (WORKFLOW_DIR / "api" / (api_path.stem + ".notes.md"))
        note_list = [notes.read_text()] if notes.exists() else []
        titles = {nid: n["_meta"]["title"] for nid, n in prompt.items() if n.get("_meta", {}).get("title")}
        ui = api_to_ui(prompt, defs, note_list, titles)
        out = WORKFLOW_DIR / api_path.name
        out.write_text(json.dumps(ui, indent=1) + "\n")
        written.append(out)
    return written


if __name__ == "__main__":
    import tempfile

    from tests.host.harness import Host

    host = Host(Path(tempfile.mkdtemp()))
    defs = {name: node_def(cls) for name, cls in host.nodes.NODE_CLASS_MAPPINGS.items()
            if name in {n["class_type"] for p in (WORKFLOW_DIR / "api").glob("*.json")
                        for n in json.loads(p.read_text()).values()}}
    for p in build_all(defs):
        print(p)
