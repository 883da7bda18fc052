#!/usr/bin/env python3
# Lines of the functions issue 23 names, from signature to closing brace, at a git revision.
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
for f,pat in [('worker/quant/gsq.cc',r'RunGsq\('),('worker/quant/gptq.cc',r'GptqQuantizer::QuantizeBatch\('),('worker/quant/export.cc',r'ExportInto\('),('worker/runner/embedded_job.cc',r'^absl::StatusOr<QuantizeJobResult> RunQuantizeJob\('),('worker/service/main.cc',r'^int main\(')]:
    t=subprocess.run(['git','show',f'{rev}:{f}'],capture_output=True,text=True).stdout
    print(rev[:7],f,pat,length(t,pat))
