"""Entry point: python train.py fit --config configs/simclr.yaml  (see `python train.py fit --help`), and
python train.py eval --config configs/eval/linear.yaml --ckpt_path <checkpoint>  (see `python train.py eval --help`)."""

from selfsup.cli import main

if __name__ == "__main__":
    main()
