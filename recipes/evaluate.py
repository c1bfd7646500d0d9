"""Evaluate a checkpoint (or a folder of samples) against held-out data: a metrics table.

    python recipes/evaluate.py --ckpt runs/demo-digits/last.ckpt            # samples with the run's sampler
    python recipes/evaluate.py --samples runs/x/samples-dpm++2m-50 --ref digits --size 16 --channels 1

Reports the variational bound in bits/dim on the held-out set (``--nll-steps`` sampled steps per
image, or ``all``; docs/math.md "Likelihood") with both reverse means — the posterior mean (the
library's default) and Eq. 19–20's, from the same network calls — the sliced Wasserstein distance
per Laplacian level, the spectrum's log power ratio per band, and FID/KID through clean-fid where
the Inception weights are local (``--inception PATH``; otherwise the row says what to fetch).
Writes metrics.json, spectrum.png and a sample grid to ``--out`` (default next to the checkpoint,
or beside the samples folder). The scoring itself is gendiff/evaluation.py.
"""
from __future__ import annotations

import cli
from gendiff.evaluation import evaluate_checkpoint, evaluate_folder, format_table
from gendiff.samplers import SAMPLERS

FLAGS = {"ref": "--ref", "samples": "--samples", "steps": "--sampler / --steps / --sampler-args"}


def parse_args(argv=None):
    p = cli.RecipeParser(__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="a checkpoint to sample from")
    src.add_argument("--samples", help="a folder of sample images")
    p.add_argument("--ref", help="reference data (default: the run's data: the held-out split of an embedded set, "
                                 "else its training images)")
    p.add_argument("--ref-n", type=cli.int_at_least(1), default=10_000,
                   help="at most this many reference images, evenly spread over a larger set")
    p.add_argument("--size", type=cli.int_at_least(1), help="image size (with --samples)")
    p.add_argument("--channels", type=int, choices=[1, 3], default=3, help="channels (with --samples)")
    p.add_argument("--n", type=cli.int_at_least(1), help="samples per seed (default: the held-out set's size)")
    p.add_argument("--seeds", type=cli.int_at_least(0), nargs="+", default=[0, 1, 2])
    p.add_argument("--sampler", type=cli.component(SAMPLERS, "sampler"),
                   help=f"one of {SAMPLERS.names()} or package.module:name (default: the run's, config.train.sampler)")
    p.add_argument("--sampler-args", type=cli.json_object, default={}, metavar="JSON",
                   help="the sampler's options, e.g. '{\"eta\": 0.5}'; one it does not take is refused")
    p.add_argument("--steps", type=cli.int_at_least(1),
                   help="network evaluations (default: the sampler's); refused for samplers that take all N steps")
    p.add_argument("--batch-size", type=cli.int_at_least(1), default=128)
    p.add_argument("--swd-min-size", type=cli.int_at_least(1), default=8,
                   help="coarsest pyramid level for SWD (>= 1 pixel)")
    p.add_argument("--inception", help="local inception-2015-12-05.pt for FID/KID")
    p.add_argument("--nll-steps", default="16", type=lambda v: v if v == "all" else int(v),
                   help="bits/dim: sampled steps per held-out image, 'all' for the exact sum, 0 to skip")
    p.add_argument("--nll-proposal", default="snr", choices=["snr", "uniform"], help="how bits/dim draws its steps")
    p.add_argument("--out", help="output folder (default: next to the checkpoint)")
    p.add_argument("--trust-code", action="store_true",
                   help="import the custom components (package.module:Name) the checkpoint names; only for files you trust")
    p.add_argument("--threads", type=cli.int_at_least(1), help="torch CPU threads (default: the cores the load leaves free)")
    args = p.parse_args(argv)
    if args.samples and not (args.ref and args.size):
        p.error("--samples needs --ref and --size")
    return args


def main(argv=None):
    args = parse_args(argv)
    cli.set_threads(args.threads)
    with cli.refusals(**FLAGS):
        if args.ckpt:
            result = evaluate_checkpoint(args.ckpt, n=args.n, seeds=args.seeds, sampler=args.sampler,
                                         steps=args.steps, batch_size=args.batch_size, swd_min_size=args.swd_min_size,
                                         inception=args.inception, out=args.out, ref_spec=args.ref,
                                         nll_steps=args.nll_steps, nll_proposal=args.nll_proposal,
                                         trust_code=args.trust_code, ref_limit=args.ref_n,
                                         sampler_options=args.sampler_args)
        else:
            result = evaluate_folder(args.samples, args.ref, args.size, args.channels, args.swd_min_size,
                                     args.inception, args.ref_n, out=args.out)
    print(format_table(result))
    return result


if __name__ == "__main__":
    cli.entry(main)
