# Replaces the generated part of docs/results/glue5_minilm.md (from its "Command:" line) with the
# table of the merged summary; the hand-written introduction above it is kept.
import json, pathlib, sys
from camtl_jax import comparison
repo = pathlib.Path(sys.argv[1])
md = repo / "docs/results/glue5_minilm.md"
summary = json.loads((repo / "docs/results/glue5_minilm.json").read_text())
text = md.read_text()
intro = text[:text.index("\nCommand: `")]
table = comparison.results_markdown(summary)
md.write_text(intro + "\n" + table[table.index("Command: `"):])
