"""Example step 4: "deploy" the model (say where it would go)."""

import sys

import fire


def main(target: str = "staging") -> int:
    print(f"Deployed the model to {target}.")
    return 0


if __name__ == "__main__":
    # fire returns main's result but would print it and exit 0: hand it to sys.exit instead.
    sys.exit(fire.Fire(main, serialize=lambda code: None))
