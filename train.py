"""Entry point: python train.py fit --config configs/simclr.yaml  (see `python train.py fit --help`)."""

from selfsup.cli import main

if __name__ == "__main__":
    main()
