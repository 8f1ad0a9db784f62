"""Insert the workshop exercises, quizzes and summaries into the notebooks (idempotent: cells tagged
"exercise" are removed and re-inserted).  Run from the repository root: python scripts/add_exercises.py"""
import hashlib
import json
import sys
from pathlib import Path

NB = Path(__file__).resolve().parent.parent / "notebooks"
TAG = {"tags": ["exercise"]}


def _id(text):
    return "ex-" + hashlib.md5(text.encode()).hexdigest()[:10]


def md(text):
    return {"cell_type": "markdown", "id": _id(text), "metadata": dict(TAG), "source": text.strip("\n").splitlines(True)}


def code(text):
    return {"cell_type": "code", "execution_count": None, "id": _id(text), "metadata": dict(TAG),
            "outputs": [], "source": text.strip("\n").splitlines(True)}


def _quiet(cell):
    """End the cell with ';' so the check's True / False is not echoed under what it printed."""
    return cell.rstrip("\n") + ";"


def exercise(task, stub, solution):
    stub, solution = _quiet(stub), _quiet(solution)
    sol = ("<details><summary>Solution</summary>\n\n```python\n" + solution.strip("\n") + "\n```\n\n</details>")
    return [md(task), code(stub), md(sol)]


def quiz(nb, questions, summary):
    qs = "\n\n".join(f"**{nb}.{i}** {q}" for i, q in enumerate(questions, 1))
    calls = "\n".join(f'answer("{nb}.{i}", "")' + (";" if i == len(questions) else "") +
                      ('   # your answer: "a", "b" or "c"' if i == 1 else "") for i in range(1, len(questions) + 1))
    return [md("## Check your understanding\n\nAnswer in the cell below: put your letter between the quotes and "
               "run it.\n\n" + qs),
            code("from unitune_nb.exercises import answer\n" + calls),
            md("## What you learned\n\n" + "\n".join(f"- {s}" for s in summary))]


def apply(name, plan):
    path = NB / name
    data = json.loads(path.read_text())
    cells = [c for c in data["cells"] if "exercise" not in c.get("metadata", {}).get("tags", [])]
    for anchor, new in reversed(plan):
        if anchor is None:
            idx = len(cells)
        else:
            hits = [i for i, c in enumerate(cells) if anchor in "".join(c["source"])]
            assert len(hits) == 1, (name, anchor, hits)
            idx = hits[0] + 1
        cells[idx:idx] = new
    data["cells"] = cells
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    from exercise_plan import PLAN  # the cells, one list per notebook

    for name, plan in PLAN.items():
        if len(sys.argv) == 1 or any(a in name for a in sys.argv[1:]):
            apply(name, plan)
            print("updated", name)
