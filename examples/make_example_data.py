"""Writes the small example data of examples/my_tasks.yaml (deterministic: random.Random(0)).

  python examples/make_example_data.py        # rewrites examples/data/

One task per head type, a few dozen rows each, in the formats a user is likely to have:
  tickets   classification  csv, quoted fields (commas, quotes, line breaks inside a field)
  ratings   regression      tsv with a header
  choice    multiple choice jsonl, a question and a list of three choices
  qa        span            a SQuAD v1.1 json document
  ner       tagging         CoNLL, token and tag separated by a space
"""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data"
SIZES = {"train": 48, "dev": 16, "test": 8}

PRODUCTS = ("Acme Router", "Blue Kettle", "Nova Phone", "Zen Lamp", "Orbit Watch", "Pixel Desk")
TEAMS = {"billing": "finance", "bug": "engineering", "account": "support"}
SUBJECTS = {
    "billing": ("charged twice", "refund for my order", "wrong invoice amount", "card declined"),
    "bug": ("app crashes", "screen stays black", "update fails", "button does nothing"),
    "account": ("cannot log in", "change my email", "delete my account", "reset password"),
}
BODIES = {
    "billing": ('I was charged twice for the {p}, "please" refund one payment.',
                "The invoice for the {p} says 40, but I paid 30."),
    "bug": ("Since the update the {p} app crashes,\nevery time I open it.",
            'The {p} shows "error 5" and then nothing, again.'),
    "account": ("I forgot my password, and the reset mail for my {p} never arrives.",
                "Please move my {p} to my new address, name@example.com."),
}
GOOD = ("great", "lovely", "excellent", "solid", "handy")
BAD = ("broken", "noisy", "flimsy", "awful", "slow")
TOOLS = {"cut paper": "scissors", "boil water": "a kettle", "write a note": "a pen",
         "tighten a screw": "a screwdriver", "light a room": "a lamp", "tell the time": "a watch"}
CITIES = ("Oslo", "Lima", "Porto", "Kyoto", "Accra", "Quito")


def tickets(rng: random.Random, n: int) -> list[dict]:
  rows = []
  for i in range(n):
    label = rng.choice(sorted(SUBJECTS))
    product = rng.choice(PRODUCTS)
    rows.append({"id": f"t{i}", "subject": rng.choice(SUBJECTS[label]),
                 "body": rng.choice(BODIES[label]).format(p=product), "label": label})
  return rows


def ratings(rng: random.Random, n: int) -> list[dict]:
  rows = []
  for _ in range(n):
    good, bad = rng.randint(0, 2), rng.randint(0, 2)
    words = rng.sample(GOOD, good) + rng.sample(BAD, bad)
    rng.shuffle(words)
    product = rng.choice(PRODUCTS)
    review = f"the {product} is " + (" and ".join(words) if words else "okay") + " ."
    rows.append({"review": review, "score": f"{3 + good - bad:.1f}"})
  return rows


def choice(rng: random.Random, n: int) -> list[dict]:
  rows = []
  for i in range(n):
    need = rng.choice(sorted(TOOLS))
    others = rng.sample([t for k, t in TOOLS.items() if k != need], 2)
    choices = others + [TOOLS[need]]
    rng.shuffle(choices)
    rows.append({"id": i, "question": f"What do you use to {need}?", "choices": choices,
                 "answer": choices.index(TOOLS[need])})
  return rows


def qa(rng: random.Random, n: int) -> list[dict]:
  rows = []
  for i in range(n):
    product, city = rng.choice(PRODUCTS), rng.choice(CITIES)
    team = rng.choice(sorted(TEAMS.values()))
    context = f"The {product} is made in {city}. Questions about it go to the {team} team."
    if rng.random() < 0.5:
      question, answer = f"Where is the {product} made?", city
    else:
      question, answer = f"Which team answers questions about the {product}?", team
    rows.append({"id": f"q{i}", "question": question, "context": context,
                 "answers": [{"text": answer, "answer_start": context.index(answer)}]})
  return rows


def ner(rng: random.Random, n: int) -> list[list[tuple[str, str]]]:
  sentences = []
  for _ in range(n):
    product, city = rng.choice(PRODUCTS).split(), rng.choice(CITIES)
    tagged = [(w, "B-PRODUCT" if j == 0 else "I-PRODUCT") for j, w in enumerate(product)]
    words = ([("my", "O")] + tagged + [("broke", "O"), ("in", "O"), (city, "B-LOC"), (".", "O")]
             if rng.random() < 0.5 else
             [("I", "O"), ("bought", "O"), ("the", "O")] + tagged + [("in", "O"), (city, "B-LOC")])
    sentences.append(words)
  return sentences


def write_csv(path: Path, rows: list[dict], columns: list[str], delimiter: str) -> None:
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f, delimiter=delimiter, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[r[c] for c in columns] for r in rows])


def main() -> None:
  OUT.mkdir(exist_ok=True)
  rng = random.Random(0)
  for split, n in SIZES.items():
    test = split == "test"
    rows = tickets(rng, n)
    write_csv(OUT / f"tickets_{split}.csv", rows,
              ["id", "subject", "body"] + ([] if test else ["label"]), ",")
    rows = ratings(rng, n)
    write_csv(OUT / f"ratings_{split}.tsv", rows, ["review"] + ([] if test else ["score"]), "\t")
    rows = [{k: v for k, v in r.items() if not (test and k == "answer")} for r in choice(rng, n)]
    (OUT / f"choice_{split}.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    paragraphs = [{"context": r["context"], "qas": [{"id": r["id"], "question": r["question"],
                                                     "answers": [] if test else r["answers"]}]}
                  for r in qa(rng, n)]
    document = {"version": "1.1", "data": [{"title": "products", "paragraphs": paragraphs}]}
    (OUT / f"qa_{split}.json").write_text(json.dumps(document, indent=1) + "\n",
                                          encoding="utf-8")
    blocks = ["\n".join(w if test else f"{w} {t}" for w, t in s) for s in ner(rng, n)]
    (OUT / f"ner_{split}.conll").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
  print(f"wrote {OUT}")


if __name__ == "__main__":
  main()
