"""Example step 2: "train" a model (count the labels)."""

import sys
from collections import Counter

import fire
from _data import read_records


def main(input_file: str = "data/dummy.data", epochs: int = 3) -> int:
    labels = Counter(record["label"] for record in read_records(input_file))
    for epoch in range(1, epochs + 1):
        print(f"Epoch {epoch}/{epochs}: learned {len(labels)} classes.")
    print("Class counts: " + ", ".join(f"{label}={count}" for label, count in sorted(labels.items())))
    return 0


if __name__ == "__main__":
    # fire returns main's result but would print it and exit 0: hand it to sys.exit instead.
    sys.exit(fire.Fire(main, serialize=lambda code: None))
