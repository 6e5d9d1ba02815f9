# One rank of a gloo all-reduce measurement, for ranks that live on
# different (emulated) hosts: the method of
# ../shared/reference/torch_gloo_allreduce.py (one fp32 tensor, a barrier
# before each timed all-reduce, the median time, busbw = algbw x 2(n-1)/n),
# which spawns every rank on 127.0.0.1 and so cannot span hosts.
#   python3 gloo_rank.py RANK WORLD MASTER_ADDR:PORT NUMEL ITERS
import sys, time, torch, torch.distributed as dist

rank, world = int(sys.argv[1]), int(sys.argv[2])
master, numel, iters = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(1)
dist.init_process_group('gloo', init_method='tcp://' + master, rank=rank, world_size=world)
t = torch.ones(numel)
dist.all_reduce(t)
ts = []
for _ in range(iters):
    dist.barrier()
    t0 = time.perf_counter()
    dist.all_reduce(t)
    ts.append(time.perf_counter() - t0)
ts.sort()
dt = ts[len(ts) // 2]
if rank == 0:
    size = numel * 4
    algbw = size / dt / 1e9
    busbw = algbw * 2 * (world - 1) / world
    print(f"gloo world={world} bytes={size} median_time={dt*1000:.1f}ms algbw={algbw:.3f}GB/s busbw={busbw:.3f}GB/s", flush=True)
dist.destroy_process_group()
