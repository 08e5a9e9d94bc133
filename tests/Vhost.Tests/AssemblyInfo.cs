// The hostile-input tests check that fds and mappings come back to a baseline, which they read from
// /proc/self; tests running beside them would move that baseline. The whole assembly runs in ~30 s serially.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
