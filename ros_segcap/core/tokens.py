"""The text tokens every model family shares: [SEG], phrase marks, visual-prompt places."""

# Five special tokens with their own embedding rows, plus the visual-block placeholder whose
# positions are always overwritten by visual tokens (its own embedding is never used).
SEG_TOKEN = '[SEG]'
P_OPEN = '<p>'
P_CLOSE = '</p>'
REGION_TOKEN = '<region>'
MARK_TOKEN = '<mark>'
SPECIAL_TOKENS = (SEG_TOKEN, P_OPEN, P_CLOSE, REGION_TOKEN, MARK_TOKEN)
IMAGE_TOKEN = '<image>'
