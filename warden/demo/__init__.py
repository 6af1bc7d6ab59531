"""Generated demo data: attachments with known words, and e-mails that carry them."""

from warden.demo.documents import DemoDocument, build_demo_documents, build_demo_messages

__all__ = ["DemoDocument", "build_demo_documents", "build_demo_messages"]
