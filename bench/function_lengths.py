#!/usr/bin/env python3
# Lines of the functions issue 23 names (None: not in that revision), from signature to closing brace, at a git revision.
# Usage: python3 bench/function_lengths.py REV   (run in the repository)
import sys,re,subprocess
def length(text, pat):
    lines=text.split('\n')
    for i,l in enumerate(lines):
        if re.search(pat,l) and not l.startswith(' '):
            for j in range(i,len(lines)):
                if lines[j]=='}' or lines[j].startswith('} catch') or lines[j]=='};':
                    return j-i+1
    return None
rev=sys.argv[1]
MOVED={'worker/tasks/quantize_job.cc':'worker/runner/embedded_job.cc',
       'worker/tasks/service_tasks.cc':'worker/runner/service_task.cc'}
for f,pat in [('worker/quant/gsq.cc',r'RunGsq\('),('worker/quant/gptq.cc',r'GptqQuantizer::QuantizeBatch\('),('worker/quant/export.cc',r'ExportInto\('),('worker/tasks/quantize_job.cc',r'^absl::StatusOr<QuantizeJobResult> RunQuantizeJob\('),('worker/service/main.cc',r'^int main\('),('worker/tasks/service_tasks.cc',r'^absl::Status RunServiceTask\('),
    # The coordinator's longest handlers before the managers, and what they became (issue 23 item 4).
    ('coordinator/service/coordinator_service.cc',r'CoordinatorService::Submit\('),('coordinator/service/coordinator_service.cc',r'CoordinatorService::Lease\('),('coordinator/service/coordinator_service.cc',r'CoordinatorService::Complete\('),
    ('coordinator/service/job_manager.cc',r'JobManager::Submit\('),('coordinator/service/lease_manager.cc',r'LeaseManager::TryLease\('),('coordinator/service/lease_manager.cc',r'LeaseManager::CompleteLocked\('),
    ('worker/service/worker_loop.cc',r'WorkerLoop::RunLease\('),('worker/service/worker_loop.cc',r'WorkerLoop::RunOnce\(')]:
    t=subprocess.run(['git','show',f'{rev}:{f}'],capture_output=True,text=True).stdout
    if not t and f in MOVED:  # moved by the one-runner change (session 9)
        f=MOVED[f]
        t=subprocess.run(['git','show',f'{rev}:{f}'],capture_output=True,text=True).stdout
    print(rev[:7],f,pat,length(t,pat))
