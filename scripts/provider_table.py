"""Print the Markdown table of video providers, their models and parameters (from the catalogue).

Used to write docs/providers/README.md: `.venv/bin/python scripts/provider_table.py`.
"""

from __future__ import annotations

from aistats_gateway.catalogue import loader


def _num(x: float | int) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def main() -> None:
    cat, _ = loader.build(None)
    names = {p.id: p.name for p in cat.providers}
    rows: dict[str, list[tuple[str, list[str]]]] = {}
    for m in cat.models:
        if m.status != "active":
            continue
        for o in m.providers:
            params = o.parameters.get("video.generation")
            if "video.generation" not in o.endpoints:
                continue
            shown = []
            for name, d in (params or {}).items():
                if not d.supported:
                    continue
                if d.values is not None:
                    shown.append(f"{name} ({', '.join(str(v) for v in d.values)})")
                elif d.minimum is not None or d.maximum is not None:
                    shown.append(f"{name} ({_num(d.minimum)}–{_num(d.maximum)})"
                                 if d.minimum is not None and d.maximum is not None else name)
                else:
                    shown.append(name)
            rows.setdefault(o.provider, []).append((f"`{m.model_id}` (`{o.provider_model_slug}`)", shown))
    print("| Provider | Model (provider slug) | Parameters (allowed values) |")
    print("|---|---|---|")
    for pid in sorted(rows):
        for i, (model, params) in enumerate(rows[pid]):
            label = f"`{pid}` ({names.get(pid, pid)})" if i == 0 else ""
            print(f"| {label} | {model} | {'; '.join(params)} |")


if __name__ == "__main__":
    main()
