import sys, json, torch, transformers, subprocess
d = sys.argv[1]
m = transformers.LlamaForCausalLM.from_pretrained(d, torch_dtype=torch.float32).eval()
ids = [int(x) for x in sys.argv[2].split(',')]
with torch.no_grad():
    logits = m(torch.tensor([ids])).logits[0]
lp = torch.log_softmax(logits, -1)
print(json.dumps([lp[i, ids[i+1]].item() for i in range(len(ids)-1)]))
