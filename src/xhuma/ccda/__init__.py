"""GP Connect Access Record: Structured (FHIR STU3) → HL7 C-CDA R2.1 CCD.

``convert(bundle, context=None) -> Conversion`` is a pure function: no I/O, ids from uuid5 over source
identifiers, time from the context (or the bundle). See docs/ccda.md and src/xhuma/ccda/SECTIONS.md.
"""

from xhuma.ccda.context import Conversion, ConversionContext, ProductCoding
from xhuma.ccda.document import NotAStructuredRecord, convert

__all__ = ["Conversion", "ConversionContext", "NotAStructuredRecord", "ProductCoding", "convert"]
