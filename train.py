"""The `selfsup` command in a checkout, one subcommand per job (each with --help):

python train.py fit --config simclr                                      pretrain a method (a shipped config, by name)
python train.py eval --config eval/linear --ckpt_path <checkpoint>       kNN, linear probe, diagnostics
python train.py export --ckpt_path <checkpoint>                          the backbone, for timm/torchvision
python train.py pack FOLDER --size 224 --out DIR                         an image folder decoded once, for fast training
python train.py report runs --out report                                 a table and plots of finished runs
"""

from selfsup.__main__ import main

if __name__ == "__main__":
    main()
