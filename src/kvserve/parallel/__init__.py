"""Tensor parallelism: one model split over several ranks (processes), each holding a
slice of every layer; torch.distributed with NCCL on GPUs and gloo on the CPU.

- group.py: the process group of one engine and its collectives;
- layers.py: the sharded layers (row-parallel projections, vocabulary-parallel embedding
  and LM head);
- shard.py: the checks a model must pass and the transform that slices a loaded model;
- followers.py: rank 0's side: start the other ranks, send each step, watch them;
- rank_worker.py: the other ranks' process: an engine core that runs the steps it is sent.
"""
