"""Entry point, one subcommand per job (each with --help):

python train.py fit --config configs/simclr.yaml                                 pretrain a method
python train.py eval --config configs/eval/linear.yaml --ckpt_path <checkpoint>  kNN, linear probe, diagnostics
python train.py export --ckpt_path <checkpoint>                                  the backbone, for timm/torchvision
"""

from selfsup.cli import main

if __name__ == "__main__":
    main()
