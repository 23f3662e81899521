"""The built-in offline demo suite: small tasks the project generates itself, one per head type.

  demo/sentiment   classification  templated reviews, positive vs negative words   (SST-2 tsv)
  demo/similarity  regression      word-bag pairs, target = 5 x Jaccard word overlap (STS-B tsv)
  demo/entities    tagging         templated sentences, B/I-PER, B/I-LOC, O          (CoNLL)
  demo/choice      multiple choice cause/effect pairs with a distractor              (COPA jsonl)
  demo/span        span            "Where does X live/work?" over a generated story  (SQuAD json)

Everything is a deterministic function of the seed (Python's random.Random.random(), whose stream
Python guarantees across versions), so `write_demo_data(dir, seed)` writes the same bytes on every
machine. The files use the original benchmarks' formats and are read by the same readers as the
real data, so the demo exercises the full path: files -> readers -> tokeniser -> model.
Each task is learnable by MiniLM in a few hundred CPU steps.
"""
from __future__ import annotations

import functools
import json
import os
import random
from typing import Callable, Sequence

from camtl_jax.tasks import base
from camtl_jax.tasks import readers
from camtl_jax.tasks.base import Task

SPLIT_SIZES = {"train": 2000, "dev": 200, "test": 200}
_STAMP = "demo_stamp.json"
_FORMAT_VERSION = 3  # bump when the generated text changes, so old directories are regenerated

# ----------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------

_POSITIVE = ("good", "great", "wonderful", "excellent", "delightful", "charming", "brilliant",
             "enjoyable", "superb", "lovely", "pleasant", "fantastic", "moving", "clever")
_NEGATIVE = ("bad", "awful", "terrible", "boring", "dreadful", "dull", "poor", "horrible",
             "disappointing", "mediocre", "tedious", "unpleasant", "clumsy", "lifeless")
_THINGS = ("movie", "film", "book", "meal", "concert", "hotel", "service", "show", "game", "album",
           "trip", "story", "play", "novel", "restaurant", "performance")
_ADVERBS = ("really", "quite", "truly", "rather", "very", "simply")
_SENTIMENT_TEMPLATES = (
    "the {thing} was {adj} .",
    "i found the {thing} {adj} and {adj2} .",
    "what a {adj} {thing} !",
    "{first} said the {thing} is {adv} {adj} .",
    "a {adj} {thing} , {adv} {adj2} from start to finish .",
    "my friends thought this {thing} was {adj} .",
    "honestly , the {thing} felt {adj} .",
    "this is a {adv} {adj} {thing} .",
)
_WORD_BAG = ("river", "mountain", "bread", "window", "garden", "yellow", "music", "winter",
             "candle", "forest", "letter", "silver", "market", "teacher", "bridge", "coffee",
             "island", "pencil", "thunder", "orange", "castle", "doctor", "rabbit", "engine",
             "summer", "paper", "village", "ocean", "shadow", "cotton", "kitchen", "planet",
             "violin", "basket", "harbor", "stone", "meadow", "tiger", "lantern", "painter")
_FIRST_NAMES = ("Anna", "Tom", "Maria", "David", "Sofia", "James", "Elena", "Omar", "Yuki", "Lars",
                "Priya", "Carlos", "Fatima", "Peter", "Chen", "Grace", "Ivan", "Nadia", "Kofi",
                "Lucia", "Hugo", "Amara", "Felix", "Ingrid")
_LAST_NAMES = ("Smith", "Garcia", "Novak", "Tanaka", "Okafor", "Muller", "Rossi", "Kowalski",
               "Haddad", "Larsen", "Silva", "Dubois")
_PLACES = ("Paris", "Berlin", "Rome", "Oslo", "Cairo", "Lima", "Tokyo", "Nairobi", "Madrid",
           "Vienna", "Dublin", "Lisbon", "Seoul", "Toronto", "Prague", "Athens", "New York",
           "Buenos Aires", "San Francisco", "Hong Kong", "Cape Town", "Rio de Janeiro")
_ENTITY_TEMPLATES = (
    "{PER} lives in {LOC} .",
    "yesterday {PER} flew from {LOC} to {LOC} .",
    "{PER} and {PER} met in {LOC} last summer .",
    "the mayor of {LOC} is {PER} .",
    "{PER} loves {LOC} in the spring .",
    "in {LOC} , {PER} opened a small bakery .",
    "{PER} wrote a book about {LOC} .",
    "after the match {PER} drove back to {LOC} .",
)
# (cause, effect) pairs; {P} is a person.
_CAUSE_EFFECT = (
    ("{P} was hungry", "{P} ate a big meal"),
    ("{P} was tired", "{P} went to bed early"),
    ("{P} felt cold", "{P} put on a warm coat"),
    ("it started to rain", "{P} opened an umbrella"),
    ("{P} won the lottery", "{P} bought a new house"),
    ("{P} broke a leg", "{P} went to the hospital"),
    ("{P} was thirsty", "{P} drank a glass of water"),
    ("the room was dark", "{P} turned on the light"),
    ("{P} missed the bus", "{P} was late for work"),
    ("the phone rang", "{P} answered the call"),
    ("{P} studied hard", "{P} passed the exam"),
    ("{P} left the ice cream in the sun", "the ice cream melted"),
    ("{P} dropped the glass", "the glass shattered"),
    ("{P} told a funny joke", "everyone laughed"),
    ("{P} forgot the keys", "{P} could not open the door"),
    ("the car ran out of fuel", "{P} walked to the station"),
    ("{P} planted seeds in spring", "flowers grew in the garden"),
    ("{P} practised the piano every day", "{P} played well at the concert"),
)
_LIVE_TEMPLATES = ("{PER} lives in {LOC}.", "{PER} has a house in {LOC}.",
                   "{PER} moved to {LOC} years ago and still lives there.")
_WORK_TEMPLATES = ("{PER} works in {LOC}.", "Every morning {PER} commutes to an office in {LOC}.",
                   "{PER} has a job in {LOC}.")
_SPAN_OTHER_TEMPLATES = ("{PER} enjoyed the {THING} last week.",
                         "Yesterday {PER} talked about a {THING}.",
                         "{PER} does not like the {THING} much.")


def _pick(rng: random.Random, seq: Sequence):
  # random() is the only stream Python promises to keep across versions; choice() is not.
  return seq[int(rng.random() * len(seq))]


def _sample(rng: random.Random, seq: Sequence, k: int) -> list:
  """k distinct items, order random (a partial Fisher-Yates on random())."""
  pool = list(seq)
  for i in range(k):
    j = i + int(rng.random() * (len(pool) - i))
    pool[i], pool[j] = pool[j], pool[i]
  return pool[:k]


def _person(rng: random.Random) -> str:
  return _pick(rng, _FIRST_NAMES) + (" " + _pick(rng, _LAST_NAMES) if rng.random() < 0.5 else "")


# ----------------------------------------------------------------------------------------------
# Generators: rng -> one row (a dict in the task's file schema)
# ----------------------------------------------------------------------------------------------


def _sentiment_row(rng: random.Random) -> dict:
  positive = rng.random() < 0.5
  words = _POSITIVE if positive else _NEGATIVE
  adj, adj2 = _sample(rng, words, 2)
  sentence = _pick(rng, _SENTIMENT_TEMPLATES).format(
      thing=_pick(rng, _THINGS), adj=adj, adj2=adj2, adv=_pick(rng, _ADVERBS),
      first=_pick(rng, _FIRST_NAMES).lower())
  return {"sentence": sentence, "label": int(positive)}


def _similarity_row(rng: random.Random) -> dict:
  n1 = 5 + int(rng.random() * 5)
  first = _sample(rng, _WORD_BAG, n1)
  keep = int(rng.random() * (n1 + 1))
  n2 = max(1, keep + int(rng.random() * 4)) if keep < n1 else n1
  fresh = [w for w in _sample(rng, _WORD_BAG, len(_WORD_BAG)) if w not in first][:n2 - keep]
  second = _sample(rng, first[:keep] + fresh, n2)
  overlap = len(set(first) & set(second)) / len(set(first) | set(second))
  return {"sentence1": " ".join(first), "sentence2": " ".join(second),
          "score": round(5.0 * overlap, 3)}


def _tagged(text: str, tag: str) -> list[tuple[str, str]]:
  return [(w, ("B-" if i == 0 else "I-") + tag) for i, w in enumerate(text.split())]


def _entities_row(rng: random.Random) -> dict:
  pairs = []
  for word in _pick(rng, _ENTITY_TEMPLATES).split():
    if word == "{PER}":
      pairs += _tagged(_person(rng), "PER")
    elif word == "{LOC}":
      pairs += _tagged(_pick(rng, _PLACES), "LOC")
    else:
      pairs.append((word, "O"))
  if pairs[0][1] == "O":
    pairs[0] = (pairs[0][0].capitalize(), "O")
  return {"words": [w for w, _ in pairs], "tags": [t for _, t in pairs]}


def _choice_row(rng: random.Random) -> dict:
  person = _pick(rng, _FIRST_NAMES)
  right, wrong = _sample(rng, range(len(_CAUSE_EFFECT)), 2)
  ask_effect = rng.random() < 0.5
  side = 1 if ask_effect else 0  # the choices are effects when asking for the effect
  premise = _CAUSE_EFFECT[right][1 - side].format(P=person)
  choices = [_CAUSE_EFFECT[right][side].format(P=person),
             _CAUSE_EFFECT[wrong][side].format(P=person)]
  label = int(rng.random() < 0.5)
  if label:
    choices.reverse()
  cap = lambda s: s[0].upper() + s[1:] + "."
  return {"premise": cap(premise), "choice1": cap(choices[0]), "choice2": cap(choices[1]),
          "question": "effect" if ask_effect else "cause", "label": label}


def _span_row(rng: random.Random) -> dict:
  # One place per story, beside a sentence about something else. Two places (a home and a
  # workplace, the question's verb picking one) stayed at chance between them (F1 0.44) for the
  # demo's whole budget in the five-task mix, and 2-4 people with 4-8 places at chance among
  # them (F1 0.2): docs/results/demo.md.
  person, place = _pick(rng, _FIRST_NAMES), _pick(rng, _PLACES)
  kind, templates = (("live", _LIVE_TEMPLATES) if rng.random() < 0.5
                     else ("work", _WORK_TEMPLATES))
  fact = _pick(rng, templates).format(PER=person, LOC=place)
  other = _pick(rng, _SPAN_OTHER_TEMPLATES).format(PER=person, THING=_pick(rng, _THINGS))
  fact_first = rng.random() < 0.5
  context = f"{fact} {other}" if fact_first else f"{other} {fact}"
  start = fact.index(place) + (0 if fact_first else len(other) + 1)
  return {"context": context, "question": f"Where does {person} {kind}?", "answer": place,
          "answer_start": start}


# ----------------------------------------------------------------------------------------------
# Writers: rows -> the original benchmark's file format
# ----------------------------------------------------------------------------------------------


def _write_sst2(path: str, rows: list[dict], test: bool) -> None:
  lines = ["index\tsentence"] if test else ["sentence\tlabel"]
  lines += [f"{i}\t{r['sentence']}" if test else f"{r['sentence']}\t{r['label']}"
            for i, r in enumerate(rows)]
  _write_text(path, "\n".join(lines) + "\n")


def _write_stsb(path: str, rows: list[dict], test: bool) -> None:
  header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
  lines = [header if test else header + "\tscore"]
  for i, r in enumerate(rows):
    line = f"{i}\tdemo\tdemo\t2024\t{i}\tnone\tnone\t{r['sentence1']}\t{r['sentence2']}"
    lines.append(line if test else f"{line}\t{r['score']:.3f}")
  _write_text(path, "\n".join(lines) + "\n")


def _write_conll(path: str, rows: list[dict], test: bool) -> None:
  del test  # WNUT-17 test files carry tags too
  blocks = ["\n".join(f"{w}\t{t}" for w, t in zip(r["words"], r["tags"])) for r in rows]
  _write_text(path, "\n\n".join(blocks) + "\n\n")


def _write_copa(path: str, rows: list[dict], test: bool) -> None:
  lines = []
  for i, r in enumerate(rows):
    record = {"premise": r["premise"], "choice1": r["choice1"], "choice2": r["choice2"],
              "question": r["question"], "idx": i}
    if not test:
      record["label"] = r["label"]
    lines.append(json.dumps(record))
  _write_text(path, "\n".join(lines) + "\n")


def _write_squad(path: str, rows: list[dict], test: bool) -> None:
  paragraphs = []
  for i, r in enumerate(rows):
    answers = [] if test else [{"text": r["answer"], "answer_start": r["answer_start"]}]
    paragraphs.append({"context": r["context"], "qas": [
        {"id": f"demo{i:05d}", "question": r["question"], "answers": answers}]})
  data = {"version": "1.1", "data": [{"title": "demo", "paragraphs": paragraphs}]}
  _write_text(path, json.dumps(data) + "\n")


def _write_text(path: str, text: str) -> None:
  """Atomic write, so a reader on another process never sees half a file."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8", newline="\n") as f:
    f.write(text)
  os.replace(tmp, path)


# name -> (row generator, writer, {split: file name relative to the demo data root})
_Generator = Callable[[random.Random], dict]
_Writer = Callable[[str, list, bool], None]
_SPECS: dict[str, tuple[_Generator, _Writer, dict[str, str]]] = {
    "demo/sentiment": (_sentiment_row, _write_sst2,
                       {s: f"sentiment/{s}.tsv" for s in SPLIT_SIZES}),
    "demo/similarity": (_similarity_row, _write_stsb,
                        {s: f"similarity/{s}.tsv" for s in SPLIT_SIZES}),
    "demo/entities": (_entities_row, _write_conll,
                      {s: f"entities/{s}.conll" for s in SPLIT_SIZES}),
    "demo/choice": (_choice_row, _write_copa, {s: f"choice/{s}.jsonl" for s in SPLIT_SIZES}),
    "demo/span": (_span_row, _write_squad, {s: f"span/{s}.json" for s in SPLIT_SIZES}),
}
DEMO_TASK_NAMES = tuple(_SPECS)


def generate_rows(name: str, split: str, seed: int = 0, num_rows: int | None = None) -> list[dict]:
  """The rows of one demo task's split, a pure function of (name, split, seed)."""
  generator = _SPECS[name][0]
  # String seeds hash with SHA-512 (stable across runs and versions), one stream per task/split.
  rng = random.Random(f"camtl-demo/{seed}/{name}/{split}")
  return [generator(rng) for _ in range(SPLIT_SIZES[split] if num_rows is None else num_rows)]


def write_demo_data(out_dir: str | os.PathLike, seed: int = 0) -> str:
  """Writes every demo task's train/dev/test files under out_dir; returns out_dir.

  Idempotent: a directory already holding this seed's data (see its stamp file) is left alone, so
  every process of a run can call it.
  """
  out_dir = os.fspath(out_dir)
  stamp = {"seed": seed, "version": _FORMAT_VERSION, "sizes": SPLIT_SIZES}
  stamp_path = os.path.join(out_dir, _STAMP)
  if os.path.exists(stamp_path):
    with open(stamp_path, encoding="utf-8") as f:
      if json.load(f) == stamp:
        return out_dir
  for name, (_, writer, files) in _SPECS.items():
    for split, rel in files.items():
      path = os.path.join(out_dir, rel)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      writer(path, generate_rows(name, split, seed), split == "test")
  _write_text(stamp_path, json.dumps(stamp))
  return out_dir


# ----------------------------------------------------------------------------------------------
# Task records: the real benchmarks' readers, bound to the demo's columns and label sets
# ----------------------------------------------------------------------------------------------

ENTITY_TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
_READERS = {
    "demo/sentiment": functools.partial(readers.read_tsv, spec=readers.TsvSpec(
        text_columns=("sentence",), label_column="label", labels=("0", "1"), id_column="index")),
    "demo/similarity": functools.partial(readers.read_tsv, spec=readers.TsvSpec(
        text_columns=("sentence1", "sentence2"), label_column="score", id_column="index",
        label_type="float", label_range=(0.0, 5.0))),
    "demo/entities": functools.partial(readers.read_conll, labels=ENTITY_TAGS),
    "demo/choice": functools.partial(readers.read_superglue, kind="copa", labels=("0", "1")),
    "demo/span": readers.read_squad,
}
# name -> (type, labels, metrics, num_choices)
_DEFINITIONS = {
    "demo/sentiment": (base.CLASSIFICATION, ("0", "1"), ("accuracy",), 1),
    "demo/similarity": (base.REGRESSION, (), ("pearson", "spearman"), 1),
    "demo/entities": (base.TAGGING, ENTITY_TAGS, ("entity_f1",), 1),
    "demo/choice": (base.MULTIPLE_CHOICE, ("0", "1"), ("accuracy",), 2),
    "demo/span": (base.SPAN, (), ("span_f1", "span_em"), 1),
}


def demo_files(name: str) -> dict[str, str]:
  """split -> file path relative to the demo data root, for one demo task."""
  return dict(_SPECS[name][2])


def demo_tasks(names: Sequence[str] = DEMO_TASK_NAMES) -> list[Task]:
  """The demo Task records; their splits are relative to write_demo_data's out_dir."""
  tasks = []
  for name in names:
    type_, labels, metrics, num_choices = _DEFINITIONS[name]
    tasks.append(Task(name=name, type=type_, labels=labels, metrics=metrics,
                      splits=demo_files(name), reader=_READERS[name], num_choices=num_choices))
  return tasks

