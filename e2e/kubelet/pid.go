package kubelet

// PID returns the host PID of container name's current process, or 0 when
// it is not running. For proa's container this is proa itself (podinit
// executes proa in place, keeping its PID), except with
// PodSpec.ShareProcessNamespace, where it is the "enter" helper that starts
// the container's process inside the Pod's PID namespace. The benchmark
// reads proa's /proc/PID/status and /proc/PID/stat through it.
func (p *Pod) PID(name string) int {
	c := p.container(name)
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.state != "running" || c.process == nil {
		return 0
	}
	return c.process.Pid
}
