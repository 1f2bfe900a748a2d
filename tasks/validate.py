"""Example step 3: check the "model" against the data and an expected constant."""

import sys

import fire
from _data import read_records


def main(input_file: str = "data/dummy.data", forty_two: int = 42) -> int:
    records = read_records(input_file)
    accuracy = sum(record["label"] == "lynx" for record in records) / len(records)
    print(f"Validated on {len(records)} records: accuracy {accuracy:.2f}.")
    if forty_two != 42:
        print(f"The answer should be 42, not {forty_two}.", file=sys.stderr)
        return 1
    print("The answer is still 42.")
    return 0


if __name__ == "__main__":
    # fire returns main's result but would print it and exit 0: hand it to sys.exit instead.
    sys.exit(fire.Fire(main, serialize=lambda code: None))
