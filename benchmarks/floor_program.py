"""The floor: a Pulumi program that registers BENCH_RESOURCES bare custom resources and nothing else."""

import os

import pulumi


class Bare(pulumi.CustomResource):
    def __init__(self, name: str) -> None:
        super().__init__("bench:index:Bare", name, {})


for i in range(int(os.environ["BENCH_RESOURCES"])):
    Bare(f"bare-{i}")
