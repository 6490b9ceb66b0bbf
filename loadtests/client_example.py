"""Call the running service with BentoML's own client (the README's Python example).

python loadtests/client_example.py [URL] [CLIP]
"""

import sys
from pathlib import Path

import bentoml

url = sys.argv[1] if len(sys.argv) > 1 else "http://localhost:3000"
clip = Path(sys.argv[2] if len(sys.argv) > 2 else "../shared/data/gtzan-samples/rock.00000.wav")

with bentoml.SyncHTTPClient(url) as client:
    reply = client.predict(audio=clip)
    print(f"{clip.name}: {reply['duration_s']:.1f} s, {reply['n_windows']} windows")
    for model in reply["models"].values():
        print(
            f"  {model['display_name']:<13} {model['top_genre']:<11} {model['top_probability']:.2f}"
            f"   (validation accuracy {model['metrics']['accuracy']:.0%})"
        )
    ens = reply["ensemble"]
    print(
        f"  {'ensemble':<13} {ens['top_genre']:<11} {ens['top_probability']:.2f}"
        f"   ({ens['agreeing_models']} of {ens['n_models']} models agree)"
    )
