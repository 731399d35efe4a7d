"""Merchant reports (issue 16): the monthly and settlement reports (XLSX and PDF), the quarterly
privacy statement, where rendered reports are kept and how they are delivered."""
