"""What the summarize.py scripts share: read every finished run under a folder's runs/ (a run is finished when its
model.pt exists) as (args, step, key, value) rows of the keys asked for."""
import csv
import glob
import os

import torch


def read_runs(folder, keys):
    for d in sorted(glob.glob(os.path.join(folder, "runs", "*"))):
        if not os.path.exists(os.path.join(d, "model.pt")):
            continue
        args = torch.load(os.path.join(d, "model.pt"), weights_only=False)["args"]
        with open(os.path.join(d, "metrics.csv")) as f:
            for step, key, value in list(csv.reader(f))[1:]:
                if key in keys:
                    yield args, int(step), key, float(value)
