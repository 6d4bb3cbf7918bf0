"""The report stage's library: HTML/Markdown rendering (render), figures (figures), Grad-CAM (gradcam)."""
