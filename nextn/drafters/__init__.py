"""Drafters: what proposes the tokens the trunk verifies. Today the model's own MTP head."""
