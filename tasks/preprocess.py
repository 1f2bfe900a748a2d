"""Example step 1: read the raw data and keep the images worth training on.

Takes ``--input_file`` as a flag and further settings as ``key=value`` words, the way the
example config passes them (``nr_images=500 filter=true``).
"""

import sys

import fire
from _data import read_records


def main(input_file: str = "data/dummy.data", *settings: str) -> int:
    options = {"nr_images": "500", "filter": "true"}
    for setting in settings:
        key, _, value = str(setting).partition("=")
        if key not in options:
            print(f"Unknown setting {setting!r}; known: {', '.join(options)}.", file=sys.stderr)
            return 2
        options[key] = value
    nr_images = int(options["nr_images"])
    records = read_records(input_file)
    print(f"Read {len(records)} records from {input_file}.")
    if options["filter"].lower() == "true":
        records = [record for record in records if int(record["width"]) >= 640]
        print(f"Kept {len(records)} records at least 640 pixels wide.")
    print(f"Prepared {min(nr_images, len(records))} of at most {nr_images} images.")
    return 0 if records else 1


if __name__ == "__main__":
    # fire returns main's result but would print it and exit 0: hand it to sys.exit instead.
    sys.exit(fire.Fire(main, serialize=lambda code: None))
